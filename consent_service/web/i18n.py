"""Words of the patient form in French (the default) and English.

A plain catalogue rather than gettext: two languages, a few dozen short
messages, and every one must exist in both (a test checks). The words of
categories, purposes and dates, which the emails use too, are in
``consent_service.wording``.
"""

from __future__ import annotations

from collections.abc import Callable

MESSAGES: dict[str, dict[str, str]] = {
    "fr": {
        "site_name": "Vos consentements de santé",
        "skip_link": "Aller au contenu",
        "other_language": "English",
        "form_title": "Demande de consentement",
        "form_intro": (
            "{organization} vous demande votre accord pour partager certaines de vos données "
            "de santé. Lisez ce qui est demandé, puis acceptez ou refusez."
        ),
        "who_asks": "Qui demande",
        "who_receives": "Qui recevra vos données",
        "practitioner_id": "Identifiant professionnel : {id}",
        "which_data": "Quelles données",
        "why": "Pour quoi faire",
        "how_long": "Pour combien de temps",
        "until_date": "Jusqu'au {date}, sauf si vous retirez votre accord avant.",
        "for_days": (
            "Pendant {days} jours à compter de votre accord, sauf si vous le retirez avant."
        ),
        "no_end": "Sans date de fin : jusqu'à ce que vous retiriez votre accord.",
        "text_heading": "Le texte du consentement",
        "text_version": "Version {version} du texte.",
        "deadline": "Vous pouvez répondre jusqu'au {when}.",
        "your_answer": "Votre réponse",
        "answer_hint": (
            "Les deux réponses sont libres. Si vous acceptez, vous pourrez retirer votre "
            "accord à tout moment."
        ),
        "grant_button": "J'accepte",
        "refuse_button": "Je refuse",
        "granted_title": "Merci, votre accord est enregistré",
        "granted_body": (
            "{practitioner} peut désormais recevoir les données indiquées, pour les raisons "
            "indiquées."
        ),
        "refused_title": "Votre refus est enregistré",
        "refused_body": (
            "Aucune donnée ne sera partagée pour cette demande. Cela ne change rien à vos soins."
        ),
        "reference": "Référence de la demande : {id}",
        "manage_link": "Voir ou retirer mes consentements",
        "manage_hint": (
            "Gardez ce lien : pendant {days} jours, il vous permet de voir vos consentements "
            "et de retirer votre accord. Passé ce délai, demandez un nouveau lien au cabinet."
        ),
        "mine_title": "Mes consentements",
        "mine_intro": (
            "Les consentements que vous avez donnés à {organization}. Vous pouvez retirer "
            "chacun d'eux à tout moment, aussi simplement que vous l'avez donné."
        ),
        "mine_empty": "Aucun consentement n'est enregistré pour vous.",
        "status_label": "État",
        "status_active": "En vigueur",
        "status_revoked": "Retiré",
        "status_expired": "Arrivé à son terme",
        "decision_deny": "Vous avez refusé ce partage.",
        "received_by": "Reçu par",
        "data_label": "Données",
        "purpose_label": "Raisons",
        "period_label": "Période",
        "period_bounded": "Du {start} au {end}",
        "period_open": "Depuis le {start}, sans date de fin",
        "withdraw_button": "Retirer ce consentement",
        "withdraw_for": "donné à {practitioner}",
        "emergency_title": "Accès en urgence à vos données",
        "emergency_intro": (
            "En cas d'urgence, un praticien peut accéder à vos données pour une durée limitée, "
            "même sans votre consentement. Chaque accès est justifié et enregistré ; le voici."
        ),
        "emergency_when": "Ouvert le",
        "emergency_why": "Motif donné",
        "emergency_until": "Jusqu'au",
        "emergency_open": "En cours",
        "emergency_ended": "Terminé",
        "emergency_expired": "Terminé à l'échéance",
        "withdrawn_title": "Votre consentement est retiré",
        "withdrawn_body": (
            "{practitioner} ne peut plus recevoir ces données à partir de maintenant. Les "
            "partages faits avant ne sont pas remis en cause."
        ),
        "back_to_list": "Retour à mes consentements",
        "what_next": "Que faire ?",
        "error_tampered_title": "Ce lien n'est pas valide",
        "error_tampered_body": "Le lien est incomplet ou a été modifié. Rien n'a été enregistré.",
        "error_tampered_next": (
            "Ouvrez le lien directement depuis le message reçu, en entier. Si cela ne "
            "fonctionne toujours pas, demandez un nouveau lien au cabinet qui vous l'a envoyé."
        ),
        "error_expired_title": "Ce lien a expiré",
        "error_expired_body": (
            "Le délai pour utiliser ce lien est dépassé. Rien n'a été enregistré."
        ),
        "error_expired_next": "Demandez un nouveau lien au cabinet qui vous l'a envoyé.",
        "code_title": "Code de vérification",
        "code_intro": (
            "Le cabinet vous a remis un code à 6 chiffres, en main propre ou par SMS. "
            "Saisissez-le pour voir la demande."
        ),
        "code_label": "Code à 6 chiffres",
        "code_button": "Continuer",
        "code_wrong": "Ce code n'est pas le bon. Essais restants : {left}.",
        "error_locked_title": "Demande bloquée",
        "error_locked_body": (
            "Trop de codes erronés : cette demande est bloquée. Rien n'a été enregistré."
        ),
        "error_locked_next": "Demandez une nouvelle demande au cabinet.",
        "error_code-required_title": "Code de vérification requis",
        "error_code-required_body": (
            "Cette demande ne peut être validée qu'après la saisie du code."
        ),
        "error_code-required_next": (
            "Rouvrez le lien reçu et saisissez le code remis par le cabinet."
        ),
        "error_answered_title": "Vous avez déjà répondu",
        "error_answered_body": (
            "Votre réponse à cette demande est déjà enregistrée ({answer}). Ce lien ne sert "
            "qu'une fois : rien n'a changé."
        ),
        "error_answered_next": (
            "Pour voir ou retirer vos consentements, ouvrez la page « Mes consentements »."
        ),
        "error_answered_late_title": "Vous avez déjà répondu",
        "error_answered_late_body": (
            "Votre réponse à cette demande est déjà enregistrée ({answer}) et le délai de "
            "cette demande est passé : rien n'a changé."
        ),
        "error_answered_late_next": (
            "Pour voir ou retirer vos consentements, ouvrez le lien « Mes consentements » reçu "
            "après votre réponse, ou demandez-en un nouveau au cabinet."
        ),
        "answer_granted": "accord",
        "answer_refused": "refus",
        "error_not_active_title": "Ce consentement n'est plus en vigueur",
        "error_not_active_body": (
            "Il a déjà été retiré ou il est arrivé à son terme. Rien n'a changé."
        ),
        "error_not_active_next": "Revenez à la liste pour voir l'état de vos consentements.",
        "error_unknown_title": "Demande introuvable",
        "error_unknown_body": "Nous ne trouvons pas ce que ce lien désigne.",
        "error_unknown_next": "Contactez le cabinet qui vous a envoyé le lien.",
        "error_csrf_title": "Le formulaire a expiré",
        "error_csrf_body": (
            "Pour votre sécurité, votre réponse n'a pas été prise en compte. Rien n'a été "
            "enregistré."
        ),
        "error_csrf_next": (
            "Rouvrez le lien reçu et répondez à nouveau. Les cookies doivent être autorisés "
            "pour ce site."
        ),
        "error_bad_form_title": "Réponse incomplète",
        "error_bad_form_body": "Votre réponse n'a pas pu être lue. Rien n'a été enregistré.",
        "error_bad_form_next": "Rouvrez le lien reçu et choisissez « J'accepte » ou « Je refuse ».",
        "error_rate_title": "Trop de tentatives",
        "error_rate_body": "Ce lien a été ouvert trop souvent en peu de temps.",
        "error_rate_next": "Patientez une minute, puis réessayez.",
        "error_server_title": "Un problème est survenu",
        "error_server_body": "Votre demande n'a pas pu aboutir.",
        "error_server_next": (
            "Réessayez dans quelques minutes. Si le problème continue, contactez le cabinet "
            "qui vous a envoyé le lien."
        ),
        "receipt_done": "Retrait pris en compte par {applied} logiciels sur {total} le {moment}.",
        "receipt_done_one": "Retrait pris en compte par le logiciel du cabinet le {moment}.",
        "receipt_pending": (
            "Retrait en cours de prise en compte par les logiciels du cabinet "
            "({applied} sur {total} pour l'instant)."
        ),
    },
    "en": {
        "site_name": "Your health consents",
        "skip_link": "Skip to content",
        "other_language": "Français",
        "form_title": "Consent request",
        "form_intro": (
            "{organization} asks for your agreement to share some of your health data. Read "
            "what is asked, then agree or refuse."
        ),
        "who_asks": "Who is asking",
        "who_receives": "Who will receive your data",
        "practitioner_id": "Professional identifier: {id}",
        "which_data": "Which data",
        "why": "What for",
        "how_long": "For how long",
        "until_date": "Until {date}, unless you withdraw your agreement before.",
        "for_days": "For {days} days from your agreement, unless you withdraw it before.",
        "no_end": "No end date: until you withdraw your agreement.",
        "text_heading": "The consent text",
        "text_version": "Version {version} of the text.",
        "deadline": "You can answer until {when}.",
        "your_answer": "Your answer",
        "answer_hint": (
            "Both answers are free. If you agree, you can withdraw your agreement at any time."
        ),
        "grant_button": "I agree",
        "refuse_button": "I refuse",
        "granted_title": "Thank you, your agreement is recorded",
        "granted_body": "{practitioner} may now receive the data listed, for the reasons listed.",
        "refused_title": "Your refusal is recorded",
        "refused_body": (
            "No data will be shared for this request. This changes nothing in your care."
        ),
        "reference": "Request reference: {id}",
        "manage_link": "See or withdraw my consents",
        "manage_hint": (
            "Keep this link: for {days} days, it lets you see your consents and withdraw your "
            "agreement. After that, ask the practice for a new link."
        ),
        "mine_title": "My consents",
        "mine_intro": (
            "The consents you gave to {organization}. You can withdraw each of them at any "
            "time, as easily as you gave it."
        ),
        "mine_empty": "No consent is recorded for you.",
        "status_label": "Status",
        "status_active": "In force",
        "status_revoked": "Withdrawn",
        "status_expired": "Ended",
        "decision_deny": "You refused this sharing.",
        "received_by": "Received by",
        "data_label": "Data",
        "purpose_label": "Reasons",
        "period_label": "Period",
        "period_bounded": "From {start} to {end}",
        "period_open": "Since {start}, no end date",
        "withdraw_button": "Withdraw this consent",
        "withdraw_for": "given to {practitioner}",
        "emergency_title": "Emergency access to your data",
        "emergency_intro": (
            "In an emergency, a practitioner may access your data for a limited time, even "
            "without your consent. Each access is justified and recorded; here they are."
        ),
        "emergency_when": "Opened on",
        "emergency_why": "Reason given",
        "emergency_until": "Until",
        "emergency_open": "Ongoing",
        "emergency_ended": "Ended",
        "emergency_expired": "Ended at its term",
        "withdrawn_title": "Your consent is withdrawn",
        "withdrawn_body": (
            "{practitioner} can no longer receive this data from now on. Sharing that "
            "happened before is not undone."
        ),
        "back_to_list": "Back to my consents",
        "what_next": "What to do next?",
        "error_tampered_title": "This link is not valid",
        "error_tampered_body": "The link is incomplete or was changed. Nothing was recorded.",
        "error_tampered_next": (
            "Open the link straight from the message you received, in full. If it still does "
            "not work, ask the practice that sent it for a new link."
        ),
        "error_expired_title": "This link has expired",
        "error_expired_body": "The time to use this link is over. Nothing was recorded.",
        "error_expired_next": "Ask the practice that sent it for a new link.",
        "code_title": "Verification code",
        "code_intro": (
            "The practice gave you a 6-digit code, in person or by text message. "
            "Type it to see the request."
        ),
        "code_label": "6-digit code",
        "code_button": "Continue",
        "code_wrong": "That is not the right code. Tries left: {left}.",
        "error_locked_title": "Request locked",
        "error_locked_body": "Too many wrong codes: this request is locked. Nothing was recorded.",
        "error_locked_next": "Ask the practice for a new request.",
        "error_code-required_title": "Verification code required",
        "error_code-required_body": (
            "This request can only be answered once its code has been typed."
        ),
        "error_code-required_next": (
            "Open the link you received again and type the code from the practice."
        ),
        "error_answered_title": "You have already answered",
        "error_answered_body": (
            "Your answer to this request is already recorded ({answer}). This link works only "
            "once: nothing changed."
        ),
        "error_answered_next": "To see or withdraw your consents, open the “My consents” page.",
        "error_answered_late_title": "You have already answered",
        "error_answered_late_body": (
            "Your answer to this request is already recorded ({answer}) and the time to answer "
            "it is over: nothing changed."
        ),
        "error_answered_late_next": (
            "To see or withdraw your consents, open the “My consents” link you were given "
            "after answering, or ask the practice for a new one."
        ),
        "answer_granted": "agreed",
        "answer_refused": "refused",
        "error_not_active_title": "This consent is no longer in force",
        "error_not_active_body": "It was already withdrawn or has ended. Nothing changed.",
        "error_not_active_next": "Go back to the list to see the state of your consents.",
        "error_unknown_title": "Request not found",
        "error_unknown_body": "We cannot find what this link points to.",
        "error_unknown_next": "Contact the practice that sent you the link.",
        "error_csrf_title": "The form has expired",
        "error_csrf_body": (
            "For your safety, your answer was not taken into account. Nothing was recorded."
        ),
        "error_csrf_next": (
            "Open the link you received again and answer once more. Cookies must be allowed "
            "for this site."
        ),
        "error_bad_form_title": "Incomplete answer",
        "error_bad_form_body": "Your answer could not be read. Nothing was recorded.",
        "error_bad_form_next": (
            "Open the link you received again and choose “I agree” or “I refuse”."
        ),
        "error_rate_title": "Too many attempts",
        "error_rate_body": "This link was opened too often in a short time.",
        "error_rate_next": "Wait a minute, then try again.",
        "error_server_title": "Something went wrong",
        "error_server_body": "Your request could not be completed.",
        "error_server_next": (
            "Try again in a few minutes. If the problem goes on, contact the practice that "
            "sent you the link."
        ),
        "receipt_done": (
            "Withdrawal applied by {applied} of {total} software systems of the practice on "
            "{moment}."
        ),
        "receipt_done_one": "Withdrawal applied by the practice's software on {moment}.",
        "receipt_pending": (
            "Withdrawal being applied by the practice's software ({applied} of {total} so far)."
        ),
    },
}

Translate = Callable[..., str]


def translator(language: str) -> Translate:
    """``t(key, **values)`` for one language; values are escaped by Jinja, not here."""
    messages = MESSAGES[language]

    def translate(key: str, **values: object) -> str:
        return messages[key].format(**values) if values else messages[key]

    return translate
