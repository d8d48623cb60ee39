"""The payers: their configuration and how their daily statements arrive (SOAP service or inbox file)."""
