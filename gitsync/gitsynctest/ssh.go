package gitsynctest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer serves the repositories of one folder over SSH on 127.0.0.1,
// running git upload-pack for "git-upload-pack '<path>'" exec requests. It
// accepts only the client key it was given.
type SSHServer struct {
	// Addr is host:port of the server.
	Addr string
	// KnownHostsLine is the known_hosts line of the server's host key.
	KnownHostsLine string
	root           string
}

// ServeSSH serves the folder holding bareDir over SSH with host as its
// host key, authorizing client only. It stops with the test.
func ServeSSH(t testing.TB, bareDir string, host, client *SSHKey) *SSHServer {
	t.Helper()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(k.Marshal(), client.Signer.PublicKey().Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown client key")
		},
	}
	cfg.AddHostKey(host.Signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &SSHServer{
		Addr: ln.Addr().String(),
		root: filepath.Dir(bareDir),
	}
	s.KnownHostsLine = knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, host.Signer.PublicKey())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c, cfg)
		}
	}()
	return s
}

// URL returns the ssh:// URL of the bare repository named name.
func (s *SSHServer) URL(name string) string { return "ssh://git@" + s.Addr + "/" + name }

func (s *SSHServer) serve(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go s.session(ch, creqs)
	}
}

func (s *SSHServer) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			req.Reply(req.Type == "env", nil)
			continue
		}
		var p struct{ Cmd string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			req.Reply(false, nil)
			return
		}
		name, arg, _ := strings.Cut(p.Cmd, " ")
		repo := filepath.Join(s.root, filepath.Clean("/"+strings.Trim(arg, "'")))
		if name != "git-upload-pack" {
			req.Reply(false, nil)
			return
		}
		req.Reply(true, nil)
		cmd := exec.Command("git", "upload-pack", repo)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return
		}
		cmd.Stdout = ch
		cmd.Stderr = ch.Stderr()
		status := uint32(0)
		if err := cmd.Start(); err != nil {
			status = 127
		} else {
			go func() { io.Copy(stdin, ch); stdin.Close() }()
			if err := cmd.Wait(); err != nil {
				status = 1
			}
		}
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
		return
	}
}
