"""Tables: reading sources, canonical digests, schema checks, validation, profiles, drift, transforms."""
