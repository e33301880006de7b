"""HTTP machinery shared by the API, the patient form and the FHIR face, and the serving edge."""
