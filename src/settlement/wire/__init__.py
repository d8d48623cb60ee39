"""The JSON shapes of claims and results, shared by the offline quote, the REST API and the dialects."""
