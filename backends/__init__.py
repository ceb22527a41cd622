"""Backends compile model rules into target text. One module per target family;
installed as `sigma_wmi.backends`."""
