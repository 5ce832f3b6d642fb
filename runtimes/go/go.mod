module github.com/h2l-dev/h2l/runtimes/go

go 1.24.0

require github.com/yalue/onnxruntime_go v1.27.0

require (
	github.com/sugarme/tokenizer v0.3.0
	golang.org/x/sys v0.38.0
	golang.org/x/text v0.25.0
	google.golang.org/protobuf v1.36.11
)

require (
	github.com/emirpasic/gods v1.18.1 // indirect
	github.com/mitchellh/colorstring v0.0.0-20190213212951-d06e56a500db // indirect
	github.com/patrickmn/go-cache v2.1.0+incompatible // indirect
	github.com/rivo/uniseg v0.4.7 // indirect
	github.com/schollz/progressbar/v2 v2.15.0 // indirect
	github.com/sugarme/regexpset v0.0.0-20200920021344-4d4ec8eaf93c // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
