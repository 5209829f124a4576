"""Default files an admin starts from, shipped as package data, and how they are rendered."""
