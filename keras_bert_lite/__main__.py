from keras_bert_lite.cli import main

raise SystemExit(main())
