"""Learning to Obstruct (LTO): a backbone meta-learned to be a poor start for restricted classes (``ob.lto``)."""
