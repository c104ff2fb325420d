// The Flux image-automation-controller's own setter code (internal/update.UpdateWithSetters, which the controller's
// internal/policy.ApplyPolicies calls with the image policies' status.latestRef) as a program: the oracle the
// differential tests run our setter writes against.
//
//	flux-setters IN OUT POLICIES
//
// IN is a directory of files, OUT an empty directory that receives the files Flux rewrote (only those), POLICIES a
// JSON list of {"namespace", "name", "image", "tag", "digest"}: each policy's latest ref. The result (file ->
// object -> changes) is printed as JSON on stdout; an error goes to stderr with exit status 1.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	reflectorv1 "github.com/fluxcd/image-reflector-controller/api/v1"
	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fluxcd/image-automation-controller/internal/update"
)

type policy struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Image     string `json:"image"`
	Tag       string `json:"tag"`
	Digest    string `json:"digest"`
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: flux-setters IN OUT POLICIES")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[3])
	if err != nil {
		fail(err)
	}
	var given []policy
	if err := json.Unmarshal(raw, &given); err != nil {
		fail(fmt.Errorf("policies: %w", err))
	}
	policies := make([]reflectorv1.ImagePolicy, 0, len(given))
	for _, p := range given {
		policies = append(policies, reflectorv1.ImagePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name},
			Status: reflectorv1.ImagePolicyStatus{
				LatestRef: &reflectorv1.ImageRef{Name: p.Image, Tag: p.Tag, Digest: p.Digest},
			},
		})
	}
	result, err := update.UpdateWithSetters(logr.Discard(), os.Args[1], os.Args[2], policies)
	if err != nil {
		fail(err)
	}
	changes := map[string][]map[string]string{}
	for file, objects := range result.FileChanges {
		for object, list := range objects {
			for _, change := range list {
				changes[file] = append(changes[file], map[string]string{
					"object": fmt.Sprintf("%s/%s %s/%s", object.APIVersion, object.Kind, object.Namespace, object.Name),
					"setter": change.Setter,
					"old":    change.OldValue,
					"new":    change.NewValue,
				})
			}
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(changes); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
