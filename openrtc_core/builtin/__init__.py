"""Built-in behaviour, registered as plugins so a third party can replace any of it."""
