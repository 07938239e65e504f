"""The identity service's domain logic: no grpc, no database, no Kafka; time is passed in."""
