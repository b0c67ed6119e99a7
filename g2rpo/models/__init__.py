"""Model classes behind the core's policy interface."""
