"""Pipeline definition, typed configuration and runners."""
