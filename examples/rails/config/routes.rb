# frozen_string_literal: true

Rails.application.routes.draw do
  # The gateway's Action Cable RPC (AnyCable's RPC over HTTP): pushgate serve
  #   --cable-rpc-url=http://127.0.0.1:3000/_pushgate --cable-rpc-secret=$PUSHGATE_CABLE_RPC_SECRET
  # The secret keeps anyone else from calling the app's connection code.
  mount Pushgate::Cable::RPC.new(secret: ENV.fetch("PUSHGATE_CABLE_RPC_SECRET")) => "/_pushgate"

  # Connection tokens for centrifuge-js pages (app/javascript/pushgate.js); not needed for /cable.
  get "/pushgate/token", to: "pushgate_tokens#show"
  get "/pushgate/subscription_token", to: "pushgate_tokens#subscription"
end
