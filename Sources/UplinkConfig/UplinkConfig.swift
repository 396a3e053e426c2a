// UplinkConfig: placeholder until its first source lands.
