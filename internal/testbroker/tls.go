package testbroker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// TLSServerName is the name the generated server certificates are issued for
// (with the IP address 127.0.0.1), and the ServerName of ClientTLSConfig.
const TLSServerName = "localhost"

// CA is an ECDSA P-256 certificate authority generated for one test.
type CA struct {
	Cert    *x509.Certificate // the CA certificate
	CertPEM []byte            // the CA certificate, PEM-encoded
	key     *ecdsa.PrivateKey
}

// NewCA generates a CA with the given common name, valid from an hour ago for
// a day. It fails the test on error.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testbroker: generate CA key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Holdfast tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testbroker: create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testbroker: parse CA certificate: %v", err)
	}
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), key: key}
}

// IssueServer issues a server certificate for TLSServerName and 127.0.0.1,
// valid from an hour ago for a day, returning the certificate and its PKCS #8
// private key, PEM-encoded.
func (ca *CA) IssueServer(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	now := time.Now()
	return ca.Issue(t, Leaf{
		CommonName: TLSServerName, DNSNames: []string{TLSServerName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), Server: true,
	})
}

// IssueClient issues a client certificate with the given common name, valid
// from an hour ago for a day, returning the certificate and its PKCS #8
// private key, PEM-encoded.
func (ca *CA) IssueClient(t testing.TB, commonName string) (certPEM, keyPEM []byte) {
	t.Helper()
	now := time.Now()
	return ca.Issue(t, Leaf{CommonName: commonName, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)})
}

// Leaf describes a certificate for Issue.
type Leaf struct {
	CommonName          string
	DNSNames            []string
	IPAddresses         []net.IP
	NotBefore, NotAfter time.Time
	Server              bool // server authentication; otherwise client authentication
}

// Issue issues the certificate l describes, signed by the CA, returning it
// and its PKCS #8 private key, PEM-encoded. It fails the test on error.
func (ca *CA) Issue(t testing.TB, l Leaf) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testbroker: generate key: %v", err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if l.Server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: []string{"Holdfast tests"}},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testbroker: create certificate: %v", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testbroker: marshal key: %v", err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", pk)
}

// CertPool returns a pool that trusts only this CA.
func (ca *CA) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// ClientTLSConfig returns a client configuration that trusts only this CA,
// with ServerName TLSServerName and TLS 1.2 as the minimum version.
func (ca *CA) ClientTLSConfig() *tls.Config {
	return &tls.Config{
		RootCAs:    ca.CertPool(),
		ServerName: TLSServerName,
		MinVersion: tls.VersionTLS12,
	}
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		t.Fatalf("testbroker: serial number: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
