"""What a run is: the run file's model, the wire messages, settings, units, errors."""
