//! Read the patchable functions and the build-id of an ELF object. (In progress.)
