"""Authentication and authorization: who a caller is (`identity`), JWTs (`tokens`),
their verification keys (`jwks`) and API keys (`apikeys`)."""
