// Simulator: placeholder until its first source lands.
