package h2l_test

import (
	"fmt"
	"log"
	"time"

	h2l "github.com/h2l-dev/h2l/runtimes/go"
)

// The README's Go service: text in, answer out, signed bundle, hot reload. Compiled by go test/vet
// (no Output comment, so not run: it needs a signed encoder bundle and KEY.pub).
func ExampleService() {
	key, err := h2l.LoadPublicKey("KEY.pub") // ORT_DYLIB_PATH=$(h2l ort-lib)
	if err != nil {
		log.Fatal(err)
	}
	svc, err := h2l.NewService("artifacts/demo/bundle", h2l.ServiceOptions{PublicKey: key, Interval: time.Second})
	if err != nil {
		log.Fatal(err) // errors.Is(err, h2l.ErrNoSignature), ErrWrongKey, ErrChecksum, ErrUnsafePath, ...
	}
	defer svc.Close()
	lease, err := svc.Acquire() // pins one bundle version, whatever is republished meanwhile
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Release()
	res, err := lease.Bundle().Ask([]string{"How do I fix a flat tyre?"}, "") // student if any, else teacher
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res[0].TopCluster, *res[0].Answer) // Answer is nil when the teacher kept no answer texts
}
