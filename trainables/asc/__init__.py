"""Acoustic scene classification with knowledge distillation: the DCASE24 student, the PaSST teacher, their data."""
