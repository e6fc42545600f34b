"""The embedded sample: a seeded generator of raw inputs in their real formats, with planted truth."""
