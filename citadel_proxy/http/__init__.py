"""HTTP plumbing shared by the routes: reading bodies, JSON and error responses, the stream writer."""
