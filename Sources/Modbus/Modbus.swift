// Modbus: placeholder until its first source lands.
