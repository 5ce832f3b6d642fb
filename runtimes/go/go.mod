module github.com/h2l-dev/h2l/runtimes/go

go 1.22

require github.com/yalue/onnxruntime_go v1.27.0
