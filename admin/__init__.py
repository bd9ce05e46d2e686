"""The secured mode's policy and its set-up, run from the services' image: who may do what in Kafka and in MQTT
(policy.py), and `python -m admin apply`, which, as the `admin` identity, gives the services their Kafka users, the
topics and the ACLs (kafka_rules.py). The operator's material (certificates, passwords, env files) is made on the
host by scripts/runtime/secured.py from the same policy."""
