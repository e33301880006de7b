"""The patient consent web form: signed links, CSRF, templates, French and English."""
