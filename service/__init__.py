"""The self-hosted compute service the official SDK and endpoints talk to."""
