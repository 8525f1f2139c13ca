"""Keys: the keyring (Tink keysets, wrapped by a KMS), the encryption every stage uses, and the
signature that seals a manifest. Used by every stage; no Beam."""
