"""Captioning engines behind one interface (see ``base``)."""
