from neuron_explainer.activation_server.main import main

main()
