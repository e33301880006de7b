"""HTTP machinery shared by the API and the patient form, and the serving edge."""
