"""Acoustic scene classification: the DCASE24 student, the PaSST teacher, their data and training loops."""
