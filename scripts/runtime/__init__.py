"""The runtime: Kafka, Mosquitto and a schema registry as local processes or containers, the services as child
processes or containers, the images, and the secured mode's material."""
