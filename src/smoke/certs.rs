//! The certificates of a smoke run's NATS, made fresh for each run and thrown away with it: a
//! CA, the server's certificate, and a client certificate each for the agent and for our side
//! (the director's role). The agent refuses plain NATS and checks the server as the director's
//! NATS is checked: a chain to the CA it is given, a subject alternative name for the address it
//! dials, and a subject CN under `*.nats.bosh-internal` (bosh-agent mbus/nats_handler.go).

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub certificate: String,
    pub private_key: String,
}

#[derive(Debug, Clone)]
pub struct NatsCertificates {
    pub ca: String,
    pub server: Pem,
    pub agent: Pem,
    pub director: Pem,
}

/// The server's name, as the director's NATS is named (`default.nats.bosh-internal`).
pub const SERVER_NAME: &str = "default.nats.bosh-internal";

/// Certificates for a NATS server reached at `server_addresses` (IPs or names) and an agent
/// called `agent_id`.
pub fn make(server_addresses: &[String], agent_id: &str) -> Result<NatsCertificates> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "stemcell-builder smoke CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)
        .context("making the smoke run's CA")?;

    let leaf = |cn: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose| -> Result<Pem> {
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params
            .signed_by(&key, &ca)
            .with_context(|| format!("making the certificate of {cn}"))?;
        Ok(Pem {
            certificate: cert.pem(),
            private_key: key.serialize_pem(),
        })
    };
    let mut server_names = vec![SERVER_NAME.to_string()];
    server_names.extend(server_addresses.iter().cloned());
    Ok(NatsCertificates {
        ca: ca.pem(),
        server: leaf(
            SERVER_NAME,
            server_names,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?,
        agent: leaf(
            &format!("{agent_id}.agent.bosh-internal"),
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?,
        director: leaf(
            "director.bosh-internal",
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_is_pem_and_the_server_names_its_addresses() {
        let certs = make(&["127.0.0.1".into(), "10.0.2.2".into()], "agent-1").unwrap();
        for pem in [&certs.server, &certs.agent, &certs.director] {
            assert!(pem.certificate.starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(pem.private_key.contains("PRIVATE KEY-----"));
        }
        assert!(certs.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(certs.server.certificate, certs.agent.certificate);
    }
}
