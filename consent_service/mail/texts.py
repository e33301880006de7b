"""The words of the messages to patients, in French (the default) and English."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "greeting": "Bonjour,",
        "invitation_subject": "{practice} vous demande votre consentement",
        "invitation": (
            "{practice} vous demande votre accord pour que {practitioner} puisse consulter "
            "certaines de vos données de santé."
        ),
        "invitation_how": (
            "Le lien ci-dessous ouvre un formulaire sécurisé : vous y verrez ce qui est "
            "demandé et pourquoi, puis vous pourrez accepter ou refuser. Vous pourrez retirer "
            "votre accord à tout moment."
        ),
        "deadline": "Ce lien est personnel et valable jusqu'au {deadline}.",
        "invitation_ignore": (
            "Si vous n'attendiez pas ce message, ignorez-le : rien ne sera partagé sans "
            "votre réponse."
        ),
        "open_form": "Répondre à la demande",
        "confirmation_subject": "Votre réponse à {practice} est enregistrée",
        "granted": "Vous avez accepté que {practitioner} consulte les données suivantes.",
        "refused": "Vous avez refusé que {practitioner} consulte les données suivantes.",
        "what": "Données : {data}. Pour : {purposes}.",
        "text_version": "Version du texte de consentement : {version}.",
        "manage": (
            "Pour voir vos consentements et les retirer, utilisez ce lien personnel, "
            "valable jusqu'au {deadline}."
        ),
        "open_manage": "Voir et retirer mes consentements",
        "practitioner_with_profession": "{name} ({profession})",
        "closing": "{practice}. Message automatique : merci de ne pas y répondre.",
    },
    "en": {
        "greeting": "Hello,",
        "invitation_subject": "{practice} asks for your consent",
        "invitation": (
            "{practice} asks for your agreement so that {practitioner} may see some of your "
            "health data."
        ),
        "invitation_how": (
            "The link below opens a secure form: it shows what is asked and why, then you can "
            "accept or refuse. You can withdraw your agreement at any time."
        ),
        "deadline": "This link is personal and valid until {deadline}.",
        "invitation_ignore": (
            "If you were not expecting this message, ignore it: nothing is shared without "
            "your answer."
        ),
        "open_form": "Answer the request",
        "confirmation_subject": "Your answer to {practice} is recorded",
        "granted": "You agreed that {practitioner} may see the following data.",
        "refused": "You refused that {practitioner} may see the following data.",
        "what": "Data: {data}. For: {purposes}.",
        "text_version": "Version of the consent text: {version}.",
        "manage": (
            "To see your consents and withdraw them, use this personal link, valid until "
            "{deadline}."
        ),
        "open_manage": "See and withdraw my consents",
        "practitioner_with_profession": "{name} ({profession})",
        "closing": "{practice}. Automatic message: please do not reply.",
    },
}
