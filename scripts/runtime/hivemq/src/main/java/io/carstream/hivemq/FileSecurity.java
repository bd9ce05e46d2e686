package io.carstream.hivemq;

import com.hivemq.extension.sdk.api.ExtensionMain;
import com.hivemq.extension.sdk.api.auth.SimpleAuthenticator;
import com.hivemq.extension.sdk.api.auth.parameter.SimpleAuthInput;
import com.hivemq.extension.sdk.api.auth.parameter.SimpleAuthOutput;
import com.hivemq.extension.sdk.api.packets.auth.DefaultAuthorizationBehaviour;
import com.hivemq.extension.sdk.api.packets.connect.ConnackReasonCode;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStartOutput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopInput;
import com.hivemq.extension.sdk.api.parameter.ExtensionStopOutput;
import com.hivemq.extension.sdk.api.services.Services;
import java.nio.ByteBuffer;

/**
 * The secured mode on HiveMQ, as an embedded extension: every client logs in with a user and password from the
 * password file (a car as its car id), and may then do only what the ACL file grants its user; the rest is denied.
 */
final class FileSecurity implements ExtensionMain {

    private final PasswordFile passwords;
    private final AclFile acl;

    FileSecurity(PasswordFile passwords, AclFile acl) {
        this.passwords = passwords;
        this.acl = acl;
    }

    @Override
    public void extensionStart(ExtensionStartInput input, ExtensionStartOutput output) {
        SimpleAuthenticator authenticator = this::authenticate;
        Services.securityRegistry().setAuthenticatorProvider(providerInput -> authenticator);
        System.out.println("secured: " + passwords.size() + " identities in the password file, ACLs enforced");
    }

    @Override
    public void extensionStop(ExtensionStopInput input, ExtensionStopOutput output) {
    }

    private void authenticate(SimpleAuthInput input, SimpleAuthOutput output) {
        String user = input.getConnectPacket().getUserName().orElse(null);
        ByteBuffer password = input.getConnectPacket().getPassword().orElse(null);
        if (user == null || password == null) {
            output.failAuthentication(ConnackReasonCode.NOT_AUTHORIZED, "a user name and password are required");
            return;
        }
        byte[] bytes = new byte[password.remaining()];
        password.get(bytes);
        if (!passwords.matches(user, bytes)) {
            output.failAuthentication(ConnackReasonCode.BAD_USER_NAME_OR_PASSWORD, "bad user name or password");
            return;
        }
        output.getDefaultPermissions().addAll(acl.permissions(user));
        output.getDefaultPermissions().setDefaultBehaviour(DefaultAuthorizationBehaviour.DENY);
        output.authenticateSuccessfully();
    }
}
