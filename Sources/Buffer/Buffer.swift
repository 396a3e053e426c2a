// Buffer: placeholder until its first source lands.
