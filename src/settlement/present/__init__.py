"""What people read: amounts, dates and names as Chinese readers expect them, a settlement's rules in plain words,
and the patient's one-stop settlement slip (HTML and PDF). Pure presentation: it reads stored documents, never the
database."""
