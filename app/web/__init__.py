"""Pages for people: the report page, the upload page, and the key cookie they sign in with."""
