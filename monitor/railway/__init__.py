"""Railway's GraphQL API: the published schema, its validation, and the client."""
