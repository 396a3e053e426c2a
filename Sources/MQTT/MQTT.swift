// MQTT: placeholder until its first source lands.
