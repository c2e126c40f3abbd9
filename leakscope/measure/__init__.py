"""The measuring engine, loaded in the measured process: collector, phases, counters."""
