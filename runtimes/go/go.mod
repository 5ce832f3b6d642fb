module github.com/h2l-dev/h2l/runtimes/go

go 1.24.0

require github.com/yalue/onnxruntime_go v1.27.0

require google.golang.org/protobuf v1.36.11

require golang.org/x/sys v0.38.0 // indirect
