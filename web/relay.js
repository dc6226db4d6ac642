<!-- placeholder: relay.js -->
