<!-- placeholder: player.js -->
