// Collector: placeholder until its first source lands.
