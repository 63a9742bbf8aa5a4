from clip_robustness.demo.generate import main

main()
