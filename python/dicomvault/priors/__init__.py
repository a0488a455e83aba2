"""Priors ready before the exam (issue 15): when an order arrives, the patient's relevant prior
studies are promoted from the cold tier and pushed to the reading workstation. Above dimse/ and
tiering/, which it uses; the worklist (integration/) tells it of new orders through a listener.
Its settings (`[priors]`) are integration/priors_settings.py, which config.py reads."""
