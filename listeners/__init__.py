"""Event listeners: Event, EventListener and the Kafka, timer and HTTP listeners."""
