"""What operator commands do, apart from the command line that asks for it: bootstrap and
teardown, migrations (`migrate`, `chains`), tenants (`tenants`), enrolment tokens (`tokens`),
host bindings (`bindings`), dead letters (`dlq`), status, the broker's topology (`topology`) and
users (`broker_users`), OpenBao's set-up (`openbao`). Built on `services.core`; no service
imports it."""
