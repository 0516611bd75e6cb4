"""What nsfwoid knows about Wikimedia: where a wiki's files live, which events are uploads, and
the event a score is published as. Pure functions over plain data; no model, no network."""
