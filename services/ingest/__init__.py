"""The ingest service: enrolment. It answers registrations (an enrolment token in, a host id and
key out) and nothing else: `app` (its life), `consumer` (the register queue), `registrar` (the
registry and tenant writes), `throttle` (slowing token guessers)."""
