"""Category, purpose and date words for patients, in French (the default) and English.

Shared by the patient form (``web``) and the emails (``mail``), so that a
patient reads the same words in both. Dates are shown in Paris time, since
the patients are in France and a date in UTC could be off by a day around
midnight.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

try:
    LOCAL_TIME: tzinfo = ZoneInfo("Europe/Paris")
except ZoneInfoNotFoundError:  # a system without tz data still renders, in UTC
    LOCAL_TIME = UTC

MONTHS = {
    "fr": (
        "janvier", "février", "mars", "avril", "mai", "juin",
        "juillet", "août", "septembre", "octobre", "novembre", "décembre",
    ),
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
}  # fmt: skip

# (label, plain-words explanation) of the default vocabularies. A word an
# operator added to CONSENT_CATEGORIES / CONSENT_PURPOSES is shown as is.
CATEGORIES = {
    "fr": {
        "identity": ("Votre identité", "nom, date de naissance, coordonnées"),
        "medical-history": ("Vos antécédents médicaux", "maladies, traitements, allergies"),
        "dental-chart": ("Votre schéma dentaire", "l'état de chacune de vos dents"),
        "radiographs": ("Vos radiographies", "radios et autres images de vos dents"),
        "treatment-plan": ("Votre plan de traitement", "les soins prévus et leur devis"),
        "prescriptions": ("Vos ordonnances", "médicaments et soins prescrits"),
        "billing": ("Votre facturation", "factures et remboursements"),
    },
    "en": {
        "identity": ("Your identity", "name, date of birth, contact details"),
        "medical-history": ("Your medical history", "illnesses, treatments, allergies"),
        "dental-chart": ("Your dental chart", "the state of each of your teeth"),
        "radiographs": ("Your X-rays", "X-rays and other images of your teeth"),
        "treatment-plan": ("Your treatment plan", "the planned care and its quote"),
        "prescriptions": ("Your prescriptions", "medicines and care prescribed"),
        "billing": ("Your billing", "invoices and reimbursements"),
    },
}
PURPOSES = {
    "fr": {
        "care-coordination": (
            "Coordonner vos soins",
            "pour que les professionnels qui vous soignent travaillent ensemble",
        ),
        "referral": ("Vous adresser à un confrère", "pour qu'un autre professionnel vous soigne"),
        "second-opinion": (
            "Demander un deuxième avis",
            "pour qu'un autre professionnel donne son avis sur votre situation",
        ),
        "emergency": ("Vous soigner en urgence", "en cas d'urgence uniquement"),
    },
    "en": {
        "care-coordination": (
            "Coordinating your care",
            "so that the professionals treating you work together",
        ),
        "referral": ("Referring you to a colleague", "so that another professional treats you"),
        "second-opinion": (
            "Getting a second opinion",
            "so that another professional gives their view on your situation",
        ),
        "emergency": ("Treating you in an emergency", "in an emergency only"),
    },
}

TIME_AT = {"fr": "{date} à {time}", "en": "{date} at {time} (Paris time)"}


def category_words(language: str, category: str) -> tuple[str, str | None]:
    """Label and explanation of a data category, in plain words."""
    label, explanation = CATEGORIES[language].get(category, (category, None))
    return label, explanation


def purpose_words(language: str, purpose: str) -> tuple[str, str | None]:
    """Label and explanation of a purpose, in plain words."""
    label, explanation = PURPOSES[language].get(purpose, (purpose, None))
    return label, explanation


def format_date(language: str, value: datetime) -> str:
    """``12 mars 2027`` / ``12 March 2027`` in Paris time."""
    local = value.astimezone(LOCAL_TIME)
    return f"{local.day} {MONTHS[language][local.month - 1]} {local.year}"


def format_moment(language: str, value: datetime) -> str:
    """A date and a time of day in Paris time, e.g. a deadline to answer."""
    local = value.astimezone(LOCAL_TIME)
    clock = f"{local.hour} h {local.minute:02d}" if language == "fr" else f"{local:%H:%M}"
    return TIME_AT[language].format(date=format_date(language, value), time=clock)
