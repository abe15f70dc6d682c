//! Certificate-bound tokens (RFC 8705 §3): the token's `cnf["x5t#S256"]`
//! must equal the SHA-256 thumbprint of the client certificate Envoy saw.
//! Envoy sends it in `source.certificate` (URL-encoded PEM) when the
//! ext_authz filter has `include_peer_certificate: true`.

/// Why a certificate binding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The token is certificate-bound and the request came without one.
    #[error("token is certificate-bound and no client certificate was presented")]
    Missing,
    /// Envoy's value is not a URL-encoded PEM certificate.
    #[error("client certificate is not a PEM certificate")]
    Malformed,
    /// A certificate, but not the one the token is bound to.
    #[error("client certificate does not match the token's cnf x5t#S256")]
    Mismatch,
}

/// The `x5t#S256` of Envoy's URL-encoded PEM certificate.
pub fn thumbprint(urlencoded_pem: &str) -> Result<String, CertError> {
    let text = percent_encoding::percent_decode_str(urlencoded_pem)
        .decode_utf8()
        .map_err(|_| CertError::Malformed)?;
    let pem = pem::parse(text.as_bytes()).map_err(|_| CertError::Malformed)?;
    if pem.tag() != "CERTIFICATE" {
        return Err(CertError::Malformed);
    }
    Ok(super::sha256_b64url(pem.contents()))
}

/// Checks a certificate-bound token (`expected` = its `cnf["x5t#S256"]`)
/// against the request's certificate (empty when there is none).
pub fn check(expected: &str, urlencoded_pem: &str) -> Result<(), CertError> {
    if urlencoded_pem.is_empty() {
        return Err(CertError::Missing);
    }
    match thumbprint(urlencoded_pem)? == expected {
        true => Ok(()),
        false => Err(CertError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(der: &[u8]) -> String {
        let text = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
        percent_encoding::utf8_percent_encode(&text, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn the_bound_certificate_matches_and_others_do_not() {
        let (a, b) = (b"certificate a".as_slice(), b"certificate b".as_slice());
        let x5t = super::super::sha256_b64url(a);
        assert_eq!(thumbprint(&encoded(a)).unwrap(), x5t);
        assert_eq!(check(&x5t, &encoded(a)), Ok(()));
        assert_eq!(check(&x5t, &encoded(b)), Err(CertError::Mismatch));
        assert_eq!(check(&x5t, ""), Err(CertError::Missing));
    }

    #[test]
    fn anything_but_a_pem_certificate_is_malformed() {
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", b"k".to_vec()));
        for bad in ["not pem", "%FF%FE", key.as_str()] {
            assert_eq!(check("x", bad), Err(CertError::Malformed), "{bad}");
        }
    }
}
